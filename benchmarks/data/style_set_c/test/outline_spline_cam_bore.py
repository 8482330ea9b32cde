import cadquery as cq
pts = [(30, 0), (18, 22), (-10, 24), (-24, 6), (-20, -16), (4, -26), (24, -16)]
cam = cq.Workplane("XY").spline(pts, periodic=True).close().extrude(10).faces(">Z").workplane().hole(10)
