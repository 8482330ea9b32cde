import cadquery as cq

block = cq.Workplane("XY").box(60, 40, 20)
rod = cq.Workplane("YZ").cylinder(100, 8)
result = block.union(rod)
