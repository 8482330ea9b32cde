import cadquery as cq

result = cq.Workplane("XY").box(30, 20, 10).edges("|Z").fillet(3).faces(">Z").edges().chamfer(1)
