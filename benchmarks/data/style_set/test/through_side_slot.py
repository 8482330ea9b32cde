import cadquery as cq

result = cq.Workplane("XY").box(200, 50, 50).faces("<Y").workplane().slot2D(80, 16).cutThruAll()
