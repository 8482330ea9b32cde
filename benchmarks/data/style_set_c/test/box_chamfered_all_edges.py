import cadquery as cq
block = cq.Workplane("XY").box(50, 30, 20).edges().chamfer(2)
