import cadquery as cq
import itertools

plate = cq.Workplane("XY").box(60, 40, 5)
centers = [(x, y) for x, y in itertools.product((-20, 0, 20), (-10, 10))]
result = plate.faces(">Z").workplane().pushPoints(centers).slot2D(8, 3).cutThruAll()
