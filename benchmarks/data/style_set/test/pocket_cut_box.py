import cadquery as cq

block = cq.Workplane("XY").box(150, 100, 25)
cavity = cq.Workplane("XY").workplane(offset=5).center(20, 10).box(50, 40, 20, centered=(True, True, False))
result = block.cut(cavity)
