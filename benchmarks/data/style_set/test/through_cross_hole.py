import cadquery as cq

result = cq.Workplane("XY").box(100, 40, 40).faces(">X").workplane().hole(15)
