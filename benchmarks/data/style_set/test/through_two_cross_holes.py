import cadquery as cq

block = cq.Workplane("XY").box(80, 80, 40)
hole_x = cq.Workplane("YZ").center(0, 10).circle(8).extrude(50, both=True)
hole_y = cq.Workplane("XZ").center(0, -10).circle(8).extrude(50, both=True)
result = block.cut(hole_x).cut(hole_y)
