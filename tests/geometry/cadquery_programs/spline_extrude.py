import cadquery as cq

pts = [(0, 0), (10, 5), (20, 0), (10, -8)]
result = cq.Workplane("XY").spline(pts, periodic=True).close().extrude(4)
