import cadquery as cq

result = cq.Workplane("ZX").polyline([(-50, 0), (50, 0), (30, 40), (-30, 40)]).close().extrude(25)
