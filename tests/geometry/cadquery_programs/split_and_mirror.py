import cadquery as cq

half = cq.Workplane("XY").box(20, 10, 10).faces(">X").workplane().circle(3).cutThruAll()
result = half.mirror("YZ", (10, 0, 0), union=True)
