import cadquery as cq

plate = cq.Workplane("XY").rect(150, 90).extrude(6)
window = cq.Workplane("XY").center(30, 0).rect(40, 20).extrude(6)
result = plate.cut(window)
