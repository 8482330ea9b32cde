import cadquery as cq

result = cq.Workplane("XY").polygon(6, 50).extrude(20).faces(">Z").workplane().hole(24)
