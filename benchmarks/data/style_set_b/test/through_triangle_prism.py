import cadquery as cq

result = cq.Workplane("XY").box(100, 50, 50).cut(cq.Workplane("XZ").polyline([(-20, -15), (20, -15), (0, 20)]).close().extrude(60, both=True))
