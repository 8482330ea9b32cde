import cadquery as cq
import random

random.seed(3)
heights = [random.randint(2, 8) for _ in range(5)]
result = cq.Workplane("XY")
for i, h in enumerate(heights):
    result = result.union(cq.Workplane("XY").box(4, 4, h).translate((5 * i, 0, h / 2)))
