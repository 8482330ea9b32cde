import cadquery as cq

result = cq.Workplane("XY").box(10, 10, 80, centered=(False, False, True))
