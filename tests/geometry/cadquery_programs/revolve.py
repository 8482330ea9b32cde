import cadquery as cq
from math import radians

profile = cq.Workplane("XZ").moveTo(5, 0).lineTo(10, 0).lineTo(10, 4).lineTo(7, 8).lineTo(5, 8).close()
result = profile.revolve(360, (0, 0, 0), (0, 1, 0))
angle = radians(360)
