import cadquery as cq

result = cq.Workplane("XY").box(40, 15, 3).faces(">Z").workplane().text("CQ", 8, 1)
