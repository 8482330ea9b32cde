import cadquery as cq

result = cq.Workplane("XY").box(120, 40, 40).faces(">Y").workplane().rect(30, 20).cutThruAll()
