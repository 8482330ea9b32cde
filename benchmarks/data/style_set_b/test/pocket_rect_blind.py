import cadquery as cq

result = cq.Workplane("XY").box(100, 60, 30).faces(">Z").workplane().rect(60, 30).cutBlind(-10)
