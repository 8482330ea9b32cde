import cadquery as cq

profile = [(0, 0), (80, 0), (80, 10), (10, 10), (10, 60), (0, 60)]
result = cq.Workplane("XY").polyline(profile).close().extrude(30)
