import cadquery as cq

outer = cq.Workplane("XY").circle(50).extrude(20)
inner = cq.Workplane("XY").circle(35).extrude(20)
result = outer.cut(inner)
