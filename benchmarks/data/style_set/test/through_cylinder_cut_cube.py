import cadquery as cq

cube = cq.Workplane("XY").box(60, 60, 60)
result = cube.cut(cq.Workplane("YZ").cylinder(80, 15))
