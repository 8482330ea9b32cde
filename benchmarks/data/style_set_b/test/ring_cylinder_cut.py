import cadquery as cq

result = cq.Workplane("XY").cylinder(30, 25).cut(cq.Workplane("XY").cylinder(30, 15))
