import cadquery as cq
profile = [(0, 0), (12, 0), (12, 30), (8, 30), (8, 70), (5, 70), (5, 90), (0, 90)]
shaft = cq.Workplane("XZ").polyline(profile).close().revolve(360, (0, 0, 0), (0, 1, 0))
