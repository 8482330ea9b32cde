import cadquery as cq
s = cq.Workplane("XY").box(30, 30, 30).intersect(cq.Workplane("XY").cylinder(30, 18))
