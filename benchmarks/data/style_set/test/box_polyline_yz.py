import cadquery as cq

pts = [(0, 0), (60, 0), (60, 25), (0, 25)]
result = cq.Workplane("YZ").polyline(pts).close().extrude(-15)
