import cadquery as cq

result = cq.Workplane("XY").box(200, 30, 30).union(cq.Workplane("XY").box(30, 200, 30))
