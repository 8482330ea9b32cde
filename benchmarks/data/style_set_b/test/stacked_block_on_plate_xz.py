import cadquery as cq

result = cq.Workplane("XZ").rect(80, 80).extrude(10).faces("<Y").workplane().rect(30, 30).extrude(40)
