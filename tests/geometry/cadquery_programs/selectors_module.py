import cadquery as cq
from cadquery import selectors

box = cq.Workplane("XY").box(10, 10, 10)
top = box.faces(selectors.DirectionMinMaxSelector(cq.Vector(0, 0, 1), True))
result = top.workplane().hole(4)
