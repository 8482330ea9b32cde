import cadquery as cq
from functools import reduce

parts = [cq.Workplane("XY").box(5, 5, 5).translate((6 * i, 0, 0)) for i in range(3)]
bridge = cq.Workplane("XY").box(20, 2, 2).translate((6, 0, 3))
result = reduce(lambda a, b: a.union(b), parts + [bridge])
