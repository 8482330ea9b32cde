import cadquery as cq

result = cq.Workplane("XZ").rect(90, 90).extrude(30).faces("<Y").workplane().polygon(6, 30).cutBlind(-8)
