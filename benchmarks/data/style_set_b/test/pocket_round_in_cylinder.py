import cadquery as cq

result = cq.Workplane("XY").circle(40).extrude(50).faces(">Z").workplane().hole(20, 10)
