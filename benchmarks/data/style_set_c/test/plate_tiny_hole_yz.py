import cadquery as cq
r = cq.Workplane("YZ").rect(0.8, 0.5).extrude(0.2).faces(">X").workplane().hole(0.1)
