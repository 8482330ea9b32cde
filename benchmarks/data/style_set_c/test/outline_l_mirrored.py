import cadquery as cq
half = cq.Workplane("XY").polyline([(0, 0), (40, 0), (40, 10), (10, 10), (10, 40), (0, 40)]).close().extrude(8)
result = half.mirror("YZ", union=True)
