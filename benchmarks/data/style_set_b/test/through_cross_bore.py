import cadquery as cq

result = cq.Workplane("XY").circle(30).extrude(100).cut(cq.Workplane("YZ").circle(8).extrude(50, both=True).translate((0, 0, 50)))
