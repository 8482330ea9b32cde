import cadquery as cq

result = cq.Workplane("XY").box(100, 20, 20).union(cq.Workplane("XY").box(20, 100, 20).translate((40, 40, 0)))
