import cadquery as cq

result = cq.Workplane("XY").box(80, 50, 20)
