import cadquery as cq

result = cq.Workplane("XY").box(150, 30, 30).cut(cq.Workplane("XY").box(20, 40, 15).translate((0, 0, 10)))
