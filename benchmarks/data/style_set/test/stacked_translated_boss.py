import cadquery as cq

plate = cq.Workplane("XY").box(120, 120, 6)
boss = cq.Workplane("XY").cylinder(50, 20).translate((30, 30, 28))
result = plate.union(boss)
