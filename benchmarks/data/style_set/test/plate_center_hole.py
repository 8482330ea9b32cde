import cadquery as cq

result = cq.Workplane("XY").box(100, 60, 8).faces(">Z").workplane().hole(20)
