import cadquery as cq

result = cq.Workplane("YZ").slot2D(120, 30, angle=30).extrude(10)
