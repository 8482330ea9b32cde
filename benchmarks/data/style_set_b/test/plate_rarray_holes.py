import cadquery as cq

result = cq.Workplane("XY").box(160, 90, 8).faces(">Z").workplane().rarray(120, 50, 2, 2).hole(10)
