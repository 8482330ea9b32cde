import cadquery as cq

result = cq.Workplane("XY").rect(150, 100).extrude(10).faces(">Z").workplane().rect(100, 50).cutThruAll()
