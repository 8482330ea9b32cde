import cadquery as cq

result = cq.Workplane("YZ").moveTo(20, 20).circle(15).extrude(15)
