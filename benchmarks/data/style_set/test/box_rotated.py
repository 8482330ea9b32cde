import cadquery as cq

plate = cq.Workplane("XY").box(40, 70, 10)
r = plate.rotate((0, 0, 0), (1, 0, 0), 90)
