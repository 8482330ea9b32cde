import cadquery as cq

pts = [(0, 0), (50, 0), (50, 40), (44, 40), (44, 6), (6, 6), (6, 40), (0, 40)]
result = cq.Workplane("YZ").polyline(pts).close().extrude(250)
