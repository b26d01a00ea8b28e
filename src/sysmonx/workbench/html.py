"""One self-contained HTML report with charts (``--html REPORT.html`` on ``config stats``,
``config diff`` and ``coverage``).

The file needs nothing else: the data sits in the page as JSON (in a
``<script type="application/json">`` element, with ``<``, ``>``, ``&`` and the JavaScript line
separators escaped, so no value can close the element), a small inline script draws each chart
as SVG, and a Content-Security-Policy forbids every fetch (no fonts, scripts, images or styles
from anywhere). Values from events and configs are untrusted: the script only ever sets them
with ``textContent``/``setAttribute`` on elements it creates (never ``innerHTML``), so they show
as text.

Section kinds (what :func:`render_report` takes, a list of dicts):

* ``{"kind": "bars", "title", "note", "labels": [str], "series": [{"name", "color",
  "values": [number]}], "stacked": bool, "clip": "head"|"tail"}``: horizontal bars, one row
  per label (stacked series side by side in one bar when ``stacked``), value at the end of the
  bar, a legend; labels longer than 48 characters keep their tail (paths), or their head with
  ``"clip": "head"``, and show in full on hover.
* ``{"kind": "table", "title", "note", "columns": [str], "rows": [[str|number]]}``.
* ``{"kind": "heatmap", "title", "note", "cells": [{"id", "score", "tip"}], "legend"}``: one
  square per ATT&CK technique, its colour from white (0) to the strongest (the maximum score).

When every chart has drawn, the script sets ``data-rendered`` on ``<body>`` to the number of
sections drawn; a script error (``window.onerror``) is written to ``data-errors`` and shown on
the page. Tests render the file in headless Chromium and read both.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

__all__ = ["render_report", "embed_json"]


def embed_json(data: Any) -> str:
    """``data`` as JSON safe inside an HTML ``<script>`` element: ``<``, ``>``, ``&``,
    U+2028 and U+2029 as ``\\uXXXX`` escapes (JSON.parse reads them back unchanged)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d2330;
background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px}
.sub{color:#5a6170;margin-bottom:18px;font-size:13px;word-break:break-all}
section{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:14px 18px;margin:0 0 18px}
h2{font-size:16px;margin:0 0 4px}
.note{color:#5a6170;font-size:12px;margin:0 0 8px}
svg text{font-size:11px;fill:#1d2330}
table{border-collapse:collapse;font-size:12px;width:100%}
th,td{border-bottom:1px solid #eceff3;padding:3px 6px;text-align:left;vertical-align:top;
overflow-wrap:break-word}
section{overflow-x:auto}
th{background:#f0f2f5}
td.num{text-align:right;white-space:nowrap}
.legend span{display:inline-block;margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
#errors{color:#b00020;font-weight:bold}
"""

_JS = r"""
(function(){
"use strict";
var errors=[];
window.onerror=function(msg,src,line){errors.push(String(msg)+" (line "+line+")");
  document.body.setAttribute("data-errors",errors.join("; "));
  var e=document.getElementById("errors"); if(e){e.textContent="Report error: "+errors.join("; ");}};
var NS="http://www.w3.org/2000/svg";
function el(tag,attrs,text){var e=document.createElement(tag);
  if(attrs){for(var k in attrs){e.setAttribute(k,attrs[k]);}}
  if(text!==undefined&&text!==null){e.textContent=String(text);} return e;}
function sv(tag,attrs,text){var e=document.createElementNS(NS,tag);
  if(attrs){for(var k in attrs){e.setAttribute(k,attrs[k]);}}
  if(text!==undefined&&text!==null){e.textContent=String(text);} return e;}
function clip(s,n,head){s=String(s);if(s.length<=n){return s;}
  return head?s.slice(0,n-1)+"\u2026":"\u2026"+s.slice(s.length-n+1);}
function fmt(n){return Number(n).toLocaleString("en-US");}
function legend(series){var d=el("div",{"class":"legend"});
  series.forEach(function(s){var sp=el("span");var i=el("i");i.style.background=s.color;
    sp.appendChild(i);sp.appendChild(document.createTextNode(s.name));d.appendChild(sp);});return d;}
function bars(sec,box){
  var labels=sec.labels||[],series=sec.series||[],stacked=!!sec.stacked;
  if(!labels.length){box.appendChild(el("p",{"class":"note"},"Nothing to show."));return;}
  var labelW=300,barW=560,rowH=stacked?20:(12*series.length+8),W=labelW+barW+90;
  var max=0;labels.forEach(function(_,r){var t=0;series.forEach(function(s){var v=+s.values[r]||0;
    if(stacked){t+=v;}else{t=Math.max(t,v);}});max=Math.max(max,t);});
  if(max<=0){max=1;}
  var svg=sv("svg",{width:W,height:labels.length*rowH+10,role:"img","class":"chart"});
  labels.forEach(function(lab,r){var y=r*rowH+4;
    var t=sv("text",{x:labelW-6,y:y+rowH/2+3,"text-anchor":"end"},clip(lab,48,sec.clip==="head"));
    t.appendChild(sv("title",null,String(lab)));svg.appendChild(t);
    var x=labelW,total=0;
    series.forEach(function(s,k){var v=+s.values[r]||0;var w=v/max*barW;
      var ry=stacked?y+2:y+2+k*12,rh=stacked?rowH-6:10;
      if(v>0){var rect=sv("rect",{x:stacked?x:labelW,y:ry,width:Math.max(w,1),height:rh,
        fill:s.color,"class":"bar"});rect.appendChild(sv("title",null,s.name+": "+fmt(v)));
        svg.appendChild(rect);}
      if(stacked){x+=w;total+=v;}
      else{svg.appendChild(sv("text",{x:labelW+w+4,y:ry+9},fmt(v)));}});
    if(stacked){svg.appendChild(sv("text",{x:x+4,y:y+rowH/2+3},fmt(total)));}});
  box.appendChild(svg);box.appendChild(legend(series));}
function table(sec,box){
  var rows=sec.rows||[];
  if(!rows.length){box.appendChild(el("p",{"class":"note"},"Nothing to show."));return;}
  var t=el("table"),h=el("tr");(sec.columns||[]).forEach(function(c){h.appendChild(el("th",null,c));});
  t.appendChild(h);
  rows.forEach(function(r){var tr=el("tr");r.forEach(function(c){
    tr.appendChild(el("td",typeof c==="number"?{"class":"num"}:null,typeof c==="number"?fmt(c):c));});
    t.appendChild(tr);});
  box.appendChild(t);}
function heat(sec,box){
  var cells=sec.cells||[];
  if(!cells.length){box.appendChild(el("p",{"class":"note"},"No technique named."));return;}
  var max=0;cells.forEach(function(c){max=Math.max(max,+c.score||0);});if(max<=0){max=1;}
  var cw=78,ch=30,cols=Math.max(1,Math.floor(900/cw)),rows=Math.ceil(cells.length/cols);
  var svg=sv("svg",{width:cols*cw+4,height:rows*ch+4,role:"img","class":"chart"});
  cells.forEach(function(c,i){var x=(i%cols)*cw+2,y=Math.floor(i/cols)*ch+2;
    var a=(+c.score||0)/max;
    var r=Math.round(255-a*(255-214)),g=Math.round(255-a*(255-39)),b=Math.round(255-a*(255-40));
    var g2=sv("g",{"class":"cell"});
    var rect=sv("rect",{x:x,y:y,width:cw-4,height:ch-4,rx:3,fill:"rgb("+r+","+g+","+b+")",
      stroke:"#c9ced6"});g2.appendChild(rect);
    g2.appendChild(sv("text",{x:x+(cw-4)/2,y:y+(ch-4)/2+4,"text-anchor":"middle",
      style:a>0.6?"fill:#fff":""},c.id));
    g2.appendChild(sv("title",null,c.id+": "+(c.tip||"")));svg.appendChild(g2);});
  box.appendChild(svg);
  if(sec.legend){box.appendChild(el("p",{"class":"note"},sec.legend));}}
var KIND={bars:bars,table:table,heatmap:heat};
var data=JSON.parse(document.getElementById("report-data").textContent);
var main=document.getElementById("main"),drawn=0;
document.getElementById("title").textContent=data.title;
document.getElementById("subtitle").textContent=data.subtitle||"";
document.title=data.title;
data.sections.forEach(function(sec){var box=el("section",{"data-kind":sec.kind});
  box.appendChild(el("h2",null,sec.title));
  if(sec.note){box.appendChild(el("p",{"class":"note"},sec.note));}
  var draw=KIND[sec.kind];
  if(!draw){throw new Error("unknown section kind "+sec.kind);}
  draw(sec,box);main.appendChild(box);drawn+=1;});
document.body.setAttribute("data-rendered",String(drawn));
})();
"""


def render_report(title: str, subtitle: str, sections: Sequence[dict[str, Any]]) -> str:
    """The whole HTML document for ``sections`` (module docstring).

    Args:
        title: the report's heading (also the page title).
        subtitle: one line under it (inputs, config).
        sections: chart and table descriptions.
    Returns:
        the document text (UTF-8 when written).
    """
    data = embed_json({"title": title, "subtitle": subtitle, "sections": list(sections)})
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "script-src 'unsafe-inline'; style-src 'unsafe-inline'\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<title>SysmonX report</title>\n<style>" + _CSS + "</style></head>\n"
        "<body><h1 id=\"title\"></h1><div class=\"sub\" id=\"subtitle\"></div>"
        "<div id=\"errors\"></div><div id=\"main\"></div>\n"
        "<noscript>This report draws its charts with JavaScript; the same data is in the "
        "--format json output.</noscript>\n"
        "<script type=\"application/json\" id=\"report-data\">" + data + "</script>\n"
        "<script>" + _JS + "</script>\n</body></html>\n")
