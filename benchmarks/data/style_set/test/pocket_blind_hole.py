import cadquery as cq

result = cq.Workplane("XY").box(80, 80, 30).faces(">Z").workplane().hole(30, depth=15)
