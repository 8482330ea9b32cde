import cadquery as cq

result = cq.Workplane("XY").circle(40).extrude(20).faces(">Z").workplane().polygon(6, 30).cutBlind(-12)
