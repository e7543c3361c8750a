/* cdl.y -- the CDL grammar (pure bison parser, locations, LAC).
 *
 * Statements need no separator (newlines are plain white space; `;` is allowed): every
 * statement starts with a keyword or with the name(s) it assigns, and no expression can
 * be followed by an identifier.  Syntax errors recover at statement level, so one run
 * reports several.  The tree is built in the compilation arena (ast.c); the driver
 * (parse_text) lives with the scanner in cdl.l.
 *
 * Precedence, loosest first:  |>   < <= > >= == != (not chained)   + -   * / @   unary -
 * ** (right)   postfix [] () .name
 */

%code requires {
#include "cdlc.h"
#ifndef YY_TYPEDEF_YY_SCANNER_T
#define YY_TYPEDEF_YY_SCANNER_T
typedef void *yyscan_t;
#endif
/* State shared by the scanner and the parser (the scanner's "extra"). */
typedef struct ParseCtx {
    const char *file;
    Ast *root;              /* D_FILE */
    int line, col;          /* scanner position, 1-based */
    int nest;               /* brackets open */
    Loc open_at[PARSE_MAX_NEST];    /* where each open bracket is, innermost last */
    char open_ch[PARSE_MAX_NEST];
    bool open_told[PARSE_MAX_NEST]; /* a syntax error already pointed at it */
    int tok, prev_tok;      /* the last two tokens (yylex), for syntax error hints */
    const char *text, *prev_text;   /* their identifier text, or NULL */
    bool fatal;             /* a hard limit was hit: stop, and say nothing more */
    bool deep_reported;     /* "expression too deeply nested" said once */
} ParseCtx;
}

%code {
#include <string.h>

int yylex(YYSTYPE *lvalp, Loc *llocp, yyscan_t scanner);
ParseCtx *yyget_extra(yyscan_t scanner);
static void yyerror(Loc *loc, yyscan_t scanner, const char *msg);

#define YYMAXDEPTH 4000
/* The parser's stacks, past their first 200 entries, grow in the compilation's arena
 * (as the scanner's buffers do, cdl.l), so a compilation that errors stop midway
 * (diag_set_recovery) leaves nothing to free. */
#define YYMALLOC(n) arena_alloc(cc_arena, (n))
#define YYFREE(p) ((void)(p))
#define YYLLOC_DEFAULT(Cur, Rhs, N) \
    do { (Cur) = (N) ? YYRHSLOC(Rhs, 1) : YYRHSLOC(Rhs, 0); } while (0)
#define CTX ((ParseCtx *)yyget_extra(scanner))

static Ast *mk(AstKind k, Loc loc) { return ast_new(k, loc); }

/* Set n's depth from its children; past AST_MAX_DEPTH report once and give an A_ERR
 * node instead, so that no later pass recurses that deep. */
static Ast *deep(ParseCtx *c, Ast *n) {
    int d = 0;
    if (n->a && n->a->depth > d) d = n->a->depth;
    if (n->b && n->b->depth > d) d = n->b->depth;
    if (n->c && n->c->depth > d) d = n->c->depth;
    for (int i = 0; i < n->list.n; i++)
        if (n->list.v[i] && n->list.v[i]->depth > d) d = n->list.v[i]->depth;
    n->depth = d + 1;
    if (n->depth <= AST_MAX_DEPTH) return n;
    if (!c->deep_reported) {
        c->deep_reported = true;
        error_at(n->loc, "expression too deeply nested (more than %d levels)", AST_MAX_DEPTH);
    }
    return mk(A_ERR, n->loc);
}

static Ast *bin(ParseCtx *c, int op, Ast *a, Ast *b, Loc loc) {
    Ast *n = mk(op == '|' ? A_PIPE : A_BIN, loc);
    n->op = op;
    n->a = a;
    n->b = b;
    return deep(c, n);
}

static Ast *kw(const char *name, Ast *v, Loc loc) {
    Ast *n = mk(A_KWARG, loc);
    n->name = name;
    n->a = v;
    n->depth = v ? v->depth + 1 : 1;
    return n;
}
}

%define api.pure full
%define api.location.type {Loc}
%locations
%define parse.error detailed
%define parse.lac full
%param {yyscan_t scanner}
%expect 0

%union {
    Ast *ast;
    AstList list;
    const char *str;
}

%token <str> IDENT "identifier"
%token <ast> INT "integer" REAL "number" STRING "string"
%token MODEL "'model'" BLOCK "'block'" INPUT "'input'" PARAM "'param'" OUTPUT "'output'"
       LOSS "'loss'" ENTRY "'entry'" FOR "'for'" IN "'in'" REVERSED "'reversed'"
       RETURN "'return'" IMPORT "'import'" TRAIN "'train'" AS "'as'" TRUE "'true'"
       FALSE "'false'" PIPE "'|>'" POW "'**'" DOTDOT "'..'"
       LE "'<='" GE "'>='" EQ "'=='" NE "'!='"

%left PIPE
%nonassoc '<' '>' LE GE EQ NE
%left '+' '-'
%left '*' '/' '@'
%precedence NEG
%right POW

%type <ast> item model block import stmt expr postfix primary call arg idx oexpr type range
%type <ast> entry_arg kv const bparam
%type <list> items stmts arglist exprlist idxlist consts consts_opt bparams bparams_opt
%type <list> targets entry_args entry_args_opt kvs

%%

file: items                         { CTX->root->list = $1; }
    ;

items: %empty                       { $$ = (AstList){0}; }
     | items item                   { $$ = $1; if ($2) ast_push(&$$, $2); }
     ;

item: model | block | import
    | error                         { $$ = NULL; }
    ;

import: IMPORT STRING               { $$ = mk(D_IMPORT, @1); $$->text = $2->text; }
      ;

model: MODEL IDENT '(' consts_opt ')' '{' stmts '}'
                                    { $$ = mk(D_MODEL, @2); $$->name = $2; $$->list = $4; $$->list2 = $7; }
     | MODEL IDENT '{' stmts '}'    { $$ = mk(D_MODEL, @2); $$->name = $2; $$->list2 = $4; }
     ;

consts_opt: %empty                  { $$ = (AstList){0}; }
          | consts
          | consts ','
          ;
consts: const                       { $$ = (AstList){0}; ast_push(&$$, $1); }
      | consts ',' const            { $$ = $1; ast_push(&$$, $3); }
      ;
const: IDENT '=' expr               { $$ = kw($1, $3, @1); }
     ;

block: BLOCK IDENT '(' bparams_opt ')' '{' stmts '}'
                                    { $$ = mk(D_BLOCK, @2); $$->name = $2; $$->list = $4; $$->list2 = $7; }
     ;
bparams_opt: %empty                 { $$ = (AstList){0}; }
           | bparams
           | bparams ','
           ;
bparams: bparam                     { $$ = (AstList){0}; ast_push(&$$, $1); }
       | bparams ',' bparam         { $$ = $1; ast_push(&$$, $3); }
       ;
bparam: IDENT                       { $$ = mk(A_NAME, @1); $$->name = $1; }
      | IDENT '=' expr              { $$ = kw($1, $3, @1); }
      ;

stmts: %empty                       { $$ = (AstList){0}; }
     | stmts stmt                   { $$ = $1; if ($2) ast_push(&$$, $2); }
     ;

stmt: targets '=' expr              { $$ = mk(S_ASSIGN, @1); $$->list = $1; $$->a = $3; }
    | targets '=' expr ',' exprlist { $$ = mk(S_ASSIGN, @1); $$->list = $1; $$->a = $3; $$->list2 = $5; }
    | IDENT '[' expr ']' '=' expr   { $$ = mk(S_COLLECT, @1); $$->name = $1; $$->a = $3; $$->b = $6; }
    | INPUT IDENT ':' type          { $$ = mk(S_INPUT, @2); $$->name = $2; $$->a = $4; }
    | PARAM IDENT ':' type          { $$ = mk(S_PARAM, @2); $$->name = $2; $$->a = $4; }
    | PARAM IDENT ':' type '=' expr { $$ = mk(S_PARAM, @2); $$->name = $2; $$->a = $4; $$->b = $6; }
    | OUTPUT expr                   { $$ = mk(S_OUTPUT, @1); $$->a = $2; }
    | OUTPUT expr AS IDENT          { $$ = mk(S_OUTPUT, @1); $$->a = $2; $$->name = $4; }
    | LOSS expr                     { $$ = mk(S_LOSS, @1); $$->a = $2; }
    | ENTRY IDENT '(' entry_args_opt ')' '=' expr
                                    { $$ = mk(S_ENTRY, @2); $$->name = $2; $$->list = $4; $$->op = 1;
                                      Ast *o = mk(S_OUTPUT, @7); o->a = $7; ast_push(&$$->list2, o); }
    | ENTRY IDENT '(' entry_args_opt ')' '=' expr AS IDENT
                                    { $$ = mk(S_ENTRY, @2); $$->name = $2; $$->list = $4; $$->op = 1;
                                      Ast *o = mk(S_OUTPUT, @7); o->a = $7; o->name = $9;
                                      ast_push(&$$->list2, o); }
    | ENTRY IDENT '(' entry_args_opt ')' '{' stmts '}'
                                    { $$ = mk(S_ENTRY, @2); $$->name = $2; $$->list = $4; $$->list2 = $7; }
    | FOR IDENT IN range '{' stmts '}'
                                    { $$ = mk(S_FOR, @1); $$->name = $2; $$->a = $4; $$->list = $6; }
    | RETURN exprlist               { $$ = mk(S_RETURN, @1); $$->list = $2; }
    | TRAIN '{' kvs '}'             { $$ = mk(S_TRAIN, @1); $$->list = $3; }
    | ';'                           { $$ = NULL; }
    | error                         { $$ = NULL; }
    ;

targets: IDENT                      { $$ = (AstList){0}; Ast *n = mk(A_NAME, @1); n->name = $1; ast_push(&$$, n); }
       | targets ',' IDENT          { $$ = $1; Ast *n = mk(A_NAME, @3); n->name = $3; ast_push(&$$, n); }
       ;

entry_args_opt: %empty              { $$ = (AstList){0}; }
              | entry_args
              | entry_args ','
              ;
entry_args: entry_arg               { $$ = (AstList){0}; ast_push(&$$, $1); }
          | entry_args ',' entry_arg { $$ = $1; ast_push(&$$, $3); }
          ;
entry_arg: IDENT ':' type           { $$ = mk(S_INPUT, @1); $$->name = $1; $$->a = $3; }
         ;

type: IDENT                         { $$ = mk(A_TYPE, @1); $$->name = $1; $$->op = 0; }
    | IDENT '[' ']'                 { $$ = mk(A_TYPE, @1); $$->name = $1; $$->op = 1; }
    | IDENT '[' exprlist ']'        { $$ = mk(A_TYPE, @1); $$->name = $1; $$->op = 1; $$->list = $3; }
    ;

range: expr DOTDOT expr             { $$ = mk(A_RANGE, @2); $$->a = $1; $$->b = $3; }
     | REVERSED '(' expr DOTDOT expr ')'
                                    { $$ = mk(A_RANGE, @1); $$->a = $3; $$->b = $5; $$->op = 1; }
     ;

kvs: %empty                         { $$ = (AstList){0}; }
   | kvs kv                         { $$ = $1; ast_push(&$$, $2); }
   | kvs ','                        { $$ = $1; }
   | kvs ';'                        { $$ = $1; }
   ;
kv: IDENT '=' expr                  { $$ = kw($1, $3, @1); }
  ;

expr: expr PIPE expr                { $$ = bin(CTX, '|', $1, $3, @2); }
    | expr '<' expr                 { $$ = bin(CTX, '<', $1, $3, @2); }
    | expr '>' expr                 { $$ = bin(CTX, '>', $1, $3, @2); }
    | expr LE expr                  { $$ = bin(CTX, 'l', $1, $3, @2); }
    | expr GE expr                  { $$ = bin(CTX, 'g', $1, $3, @2); }
    | expr EQ expr                  { $$ = bin(CTX, 'e', $1, $3, @2); }
    | expr NE expr                  { $$ = bin(CTX, 'n', $1, $3, @2); }
    | expr '+' expr                 { $$ = bin(CTX, '+', $1, $3, @2); }
    | expr '-' expr                 { $$ = bin(CTX, '-', $1, $3, @2); }
    | expr '*' expr                 { $$ = bin(CTX, '*', $1, $3, @2); }
    | expr '/' expr                 { $$ = bin(CTX, '/', $1, $3, @2); }
    | expr '@' expr                 { $$ = bin(CTX, '@', $1, $3, @2); }
    | expr POW expr                 { $$ = bin(CTX, 'P', $1, $3, @2); }
    | '-' expr %prec NEG            { $$ = mk(A_NEG, @1); $$->a = $2; $$ = deep(CTX, $$); }
    | postfix
    ;

postfix: primary
       | postfix '[' idxlist ']'    { $$ = mk(A_INDEX, @2); $$->a = $1; $$->list = $3; $$ = deep(CTX, $$); }
       | postfix '.' IDENT          { $$ = mk(A_ATTR, @2); $$->a = $1; $$->name = $3; $$ = deep(CTX, $$); }
       ;

primary: INT
       | REAL
       | STRING
       | TRUE                       { $$ = mk(A_BOOL, @1); $$->ival = 1; }
       | FALSE                      { $$ = mk(A_BOOL, @1); $$->ival = 0; }
       | IDENT                      { $$ = mk(A_NAME, @1); $$->name = $1; }
       | call
       | '(' expr ')'               { $$ = $2; }
       | '[' ']'                    { $$ = mk(A_LIST, @1); }
       | '[' exprlist ']'           { $$ = mk(A_LIST, @1); $$->list = $2; $$ = deep(CTX, $$); }
       | '[' exprlist ',' ']'       { $$ = mk(A_LIST, @1); $$->list = $2; $$ = deep(CTX, $$); }
       ;

call: IDENT '(' ')'                 { $$ = mk(A_CALL, @1); $$->name = $1; }
    | IDENT '(' arglist ')'         { $$ = mk(A_CALL, @1); $$->name = $1; $$->list = $3; $$ = deep(CTX, $$); }
    | IDENT '(' arglist ',' ')'     { $$ = mk(A_CALL, @1); $$->name = $1; $$->list = $3; $$ = deep(CTX, $$); }
    ;
arglist: arg                        { $$ = (AstList){0}; ast_push(&$$, $1); }
       | arglist ',' arg            { $$ = $1; ast_push(&$$, $3); }
       ;
arg: expr
   | IDENT '=' expr                 { $$ = kw($1, $3, @1); }
   ;

exprlist: expr                      { $$ = (AstList){0}; ast_push(&$$, $1); }
        | exprlist ',' expr         { $$ = $1; ast_push(&$$, $3); }
        ;

idxlist: idx                        { $$ = (AstList){0}; ast_push(&$$, $1); }
       | idxlist ',' idx            { $$ = $1; ast_push(&$$, $3); }
       ;
idx: expr
   | oexpr ':' oexpr                { $$ = mk(A_SLICE, @2); $$->a = $1; $$->b = $3; $$ = deep(CTX, $$); }
   | oexpr ':' oexpr ':' oexpr      { $$ = mk(A_SLICE, @2); $$->a = $1; $$->b = $3; $$->c = $5; $$ = deep(CTX, $$); }
   ;
oexpr: %empty                       { $$ = NULL; }
     | expr
     ;

%%

/* A misspelt statement keyword among the last two tokens (`ouptut h`, `modle m`):
 * " ('ouptut': did you mean 'output'?)", or "". */
static const char *keyword_hint(const ParseCtx *c) {
    static const char *const kw[] = {"model", "block", "import", "input", "param", "output", "loss", "entry",
                                     "for", "return", "train"};
    int n = (int)(sizeof kw / sizeof kw[0]);
    const char *w = c->tok == IDENT ? c->text : NULL;
    const char *s = w ? diag_suggest(w, kw, n) : NULL;
    if (!s && c->prev_tok == IDENT) s = diag_suggest(w = c->prev_text, kw, n);
    return s ? arena_printf(cc_arena, " ('%s': did you mean '%s'?)", w, s) : "";
}

/* Syntax errors: bison's detailed message at the lookahead token, with a hint for a
 * misspelt keyword, and, when a ( or [ opened on an earlier line is still open, its
 * place (an unclosed bracket is only noticed at the next statement).  Nothing after a
 * fatal scanner error (it already spoke).  Stack exhaustion means absurd nesting. */
static void yyerror(Loc *loc, yyscan_t scanner, const char *msg) {
    ParseCtx *c = CTX;
    if (c->fatal) return;
    if (strcmp(msg, "memory exhausted") == 0) {
        c->fatal = true;
        error_at(*loc, "too deeply nested: the parser's stack is exhausted");
        return;
    }
    int k = c->nest - 1;
    if (k >= PARSE_MAX_NEST) k = -1;
    bool open = k >= 0 && c->open_ch[k] != '{' && !c->open_told[k] && c->open_at[k].line < loc->line;
    if (!open) {
        error_at(*loc, "%s%s", msg, keyword_hint(c));
        return;
    }
    Loc at = c->open_at[k];
    c->open_told[k] = true;
    error_at(*loc, "%s; the '%c' at %d:%d is not closed", msg, c->open_ch[k], at.line, at.col);
    note_at(at, "'%c' opened here", c->open_ch[k]);
}
