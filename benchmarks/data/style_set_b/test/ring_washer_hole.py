import cadquery as cq

result = cq.Workplane("XY").circle(100).extrude(20).faces(">Z").workplane().hole(120)
