import cadquery as cq

bar = cq.Workplane("XY").box(120, 40, 30)
notch = cq.Workplane("XY").box(20, 40, 15).translate((0, 0, 7.5))
result = bar.cut(notch)
