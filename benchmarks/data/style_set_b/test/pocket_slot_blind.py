import cadquery as cq

result = cq.Workplane("XY").box(120, 40, 20).faces(">Z").workplane().slot2D(50, 12).cutBlind(-5)
