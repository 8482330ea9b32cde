import cadquery as cq

result = cq.Workplane("XY").polyline([(0, 0), (100, 0), (0, 60)]).close().extrude(10)
