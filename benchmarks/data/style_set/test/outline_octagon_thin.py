import cadquery as cq

result = cq.Workplane("YZ").polygon(8, 50).extrude(5)
