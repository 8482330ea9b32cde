import cadquery as cq
bar = cq.Workplane("XY").box(100, 20, 20).rotate((0, 0, 0), (0, 0, 1), 30).rotate((0, 0, 0), (1, 0, 0), 17).translate((5, -3, 2))
